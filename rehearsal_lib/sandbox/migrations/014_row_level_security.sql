-- Row-level security on the candidate data. The app role (rehearsal_app, not the tables' owner)
-- keeps full access through an explicit permissive policy; any other non-owner role sees nothing.
ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE answers ENABLE ROW LEVEL SECURITY;
CREATE POLICY sessions_app_all ON sessions TO rehearsal_app USING (true) WITH CHECK (true);
CREATE POLICY answers_app_all ON answers TO rehearsal_app USING (true) WITH CHECK (true);
