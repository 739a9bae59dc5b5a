"""The disruption harness: steady traffic before, during and after a disruption, and the judgements of it
(`harness`), the built-in injectors (`injectors`), the timeline chart (`chart`) and the shared params
blocks (`params`). Used by the faults and deploy phases; usable by any phase."""
