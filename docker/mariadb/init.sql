-- The user Headwater connects as: a replica that may read the binlog and the tables.
CREATE USER IF NOT EXISTS 'headwater'@'%' IDENTIFIED BY 'headwater';
CREATE USER IF NOT EXISTS 'headwater'@'localhost' IDENTIFIED BY 'headwater';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD ON *.* TO 'headwater'@'%';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD ON *.* TO 'headwater'@'localhost';
