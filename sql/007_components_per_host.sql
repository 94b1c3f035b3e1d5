-- components: one row per program per host. Several hosts of one appliance
-- each run a registry listener and a log shipper (and maybe memcached and
-- postgres) under the same names; programs of the kinds that are numbered
-- across hosts (web2, worker1) have one row either way.
ALTER TABLE components DROP CONSTRAINT components_pkey;
ALTER TABLE components ADD PRIMARY KEY (instance, host, name);
