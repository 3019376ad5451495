-- SPDX-License-Identifier: Apache-2.0
-- Several brokers behind one load balancer (README "Scaling out").
--
-- brokers: every broker's plugin upserts its row at start and as a
-- heartbeat, and deletes it when it stops cleanly.  A row whose heartbeat
-- is older than a few intervals is a broker that is down.  piniond reads
-- this table to keep one MQTT session per live broker, at service_address.
CREATE TABLE brokers (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    service_address text NOT NULL CHECK (service_address ~ '^[^\s/]+:[0-9]{1,5}$'),
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now()
);

-- device_presence: the broker each device is connected to, written by the
-- brokers' workers in batches (never on the CONNECT path).  connected_at is
-- the broker's clock at admission: a connect older than the row never
-- overwrites it (a late batch from the broker the device left), and a
-- disconnect removes the row only if it is the same broker's same
-- connection (generation), so a device that moved stays where it is.
-- Keyed by identifier: a just-in-time provisioned device connects before
-- its devices row exists.
CREATE TABLE device_presence (
    identifier      text PRIMARY KEY,
    broker_id       text NOT NULL,
    generation      bigint NOT NULL,
    connected_at    timestamptz NOT NULL
);
CREATE INDEX device_presence_broker ON device_presence (broker_id);

-- The broker on which the current manifest of an in-flight update was
-- published (retained), NULL when it was published nowhere yet (device
-- offline, or on a broker piniond cannot reach).  When the device shows up
-- on another broker, piniond re-issues the manifest there.
ALTER TABLE device_updates ADD COLUMN broker_id text;

-- Presence on brokers that are up: a broker beats every 2 s; one silent for
-- 10 s is down, and its devices are taken to be nowhere until they show up
-- on another broker (or it comes back and clears its rows).
CREATE VIEW live_device_presence AS
    SELECT p.identifier, p.broker_id, p.connected_at FROM device_presence p
    JOIN brokers b ON b.id = p.broker_id
    WHERE b.heartbeat_at > now() - interval '10 seconds';
