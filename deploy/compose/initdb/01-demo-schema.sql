-- Runs once, on the first start of each node (docker-entrypoint-initdb.d), before `pgbidi setup`.
-- pgbidi does not replicate DDL: every node gets the same tables, each with a primary key.
CREATE TABLE public.counters (
  id int PRIMARY KEY,
  value bigint NOT NULL,
  written_by text NOT NULL,
  written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE public.events (
  node text NOT NULL,
  seq bigint NOT NULL,
  amount int NOT NULL,
  written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (node, seq)
);
