-- The role Headwater connects as: logical replication plus read access for snapshots.
CREATE ROLE headwater WITH LOGIN REPLICATION PASSWORD 'headwater';
GRANT pg_read_all_data TO headwater;
