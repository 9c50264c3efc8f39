-- The role Headwater connects as: logical replication plus read access for snapshots.
CREATE ROLE headwater WITH LOGIN REPLICATION PASSWORD 'headwater';
GRANT pg_read_all_data TO headwater;
-- Lets Headwater create its publication (it must also own the published tables, or a
-- superuser creates the publication instead: CREATE PUBLICATION … FOR TABLE …).
GRANT CREATE ON DATABASE postgres TO headwater;
