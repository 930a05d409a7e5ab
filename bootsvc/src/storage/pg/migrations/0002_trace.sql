-- The boot trace (crate::trace): each machine's last steps, numbered per machine; the
-- recorder deletes those older than trace.steps_per_machine as it stores new ones.
CREATE TABLE trace_steps (
    key   macaddr NOT NULL,
    n     bigint NOT NULL,
    at_ms bigint NOT NULL,
    step  jsonb NOT NULL,
    PRIMARY KEY (key, n)
);

-- The installer's log, in the chunks it was sent in (crate::trace::log), and per machine
-- the bookkeeping of its runs (LogMeta: bytes and seqs per run, oldest run first), locked
-- while a chunk is admitted.
CREATE TABLE log_meta (
    key  macaddr PRIMARY KEY,
    meta jsonb NOT NULL
);
CREATE TABLE log_chunks (
    key    macaddr NOT NULL,
    run_id text NOT NULL,
    seq    bigint NOT NULL,
    chunk  jsonb NOT NULL,
    PRIMARY KEY (key, run_id, seq)
);
