"""Notes API: a small FastAPI + SQLModel service used as a rehearsal target in Rehearsal's tests."""
