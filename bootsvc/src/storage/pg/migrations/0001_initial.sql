-- osie schema version 1: machines, their state and events, the DHCP pool, DHCP requests
-- seen. bootsvc/docs/database.md explains every table; `bootsvc db migrate` applies this
-- once, in one transaction, and records that it did.

-- The inventory: one row per machine, the validated native record as JSON, and the fields
-- bootsvc looks machines up by as columns the database keeps unique.
CREATE SEQUENCE machines_revision;
CREATE TABLE machines (
    id          bigserial PRIMARY KEY,
    -- The site the machine belongs to; NULL: any.
    site        text,
    hostname    text NOT NULL,
    instance_id text NOT NULL UNIQUE,
    boot_mac    macaddr NOT NULL UNIQUE,
    fixed_ip    inet,
    record      jsonb NOT NULL,
    -- Where the record came from: the file it was imported from, or the admin API.
    source      text NOT NULL,
    -- machines_revision when it last changed.
    revision    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX machines_fixed_ip ON machines (coalesce(site, ''), fixed_ip) WHERE fixed_ip IS NOT NULL;
-- Every NIC of every machine, each at most once.
CREATE TABLE machine_macs (
    mac        macaddr PRIMARY KEY,
    machine_id bigint NOT NULL REFERENCES machines (id) ON DELETE CASCADE
);
CREATE INDEX machine_macs_machine ON machine_macs (machine_id);

-- Each machine's state (crate::state::MachineState as JSON), keyed by its first MAC;
-- `version` grows with every change so a cache never goes back to an older state.
CREATE TABLE machine_state (
    key        macaddr PRIMARY KEY,
    version    bigint NOT NULL,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events, numbered per machine from 0. An installer run's event (run_id, seq) is stored
-- once whichever instance receives it, however often it is sent; events without them
-- (phone-home) are all kept (NULLs are distinct).
CREATE TABLE events (
    key      macaddr NOT NULL,
    n        bigint NOT NULL,
    run_id   text,
    seq      bigint,
    phase    text NOT NULL,
    received text NOT NULL,
    source   inet,
    event    jsonb NOT NULL,
    PRIMARY KEY (key, n),
    UNIQUE (key, run_id, seq)
);

-- The DHCP pool, per site. A binding outlives its lease (`expires`, Unix seconds) so a
-- machine gets its address back; an address is bound to one MAC and a MAC to one address.
CREATE TABLE pool_leases (
    site    text NOT NULL,
    ip      inet NOT NULL,
    mac     macaddr NOT NULL,
    expires bigint NOT NULL,
    PRIMARY KEY (site, ip),
    UNIQUE (site, mac)
);
-- Addresses offered and not yet requested, held for their client until `until`.
CREATE TABLE pool_offers (
    site  text NOT NULL,
    mac   macaddr NOT NULL,
    ip    inet NOT NULL,
    until bigint NOT NULL,
    PRIMARY KEY (site, mac),
    UNIQUE (site, ip)
);
-- Addresses a client found in use by another host, left alone until `until`.
CREATE TABLE pool_declined (
    site  text NOT NULL,
    ip    inet NOT NULL,
    until bigint NOT NULL,
    PRIMARY KEY (site, ip)
);

-- Proxy mode: the address each inventory NIC last asked the site's DHCP server for
-- (crate::storage::requests), written behind every few seconds.
CREATE TABLE dhcp_requests (
    site    text NOT NULL,
    mac     macaddr NOT NULL,
    ip      inet NOT NULL,
    at      bigint NOT NULL,
    relayed boolean NOT NULL,
    PRIMARY KEY (site, mac)
);
