-- SPDX-License-Identifier: Apache-2.0
-- Pinion schema, version 1.
-- Applied by `pinion db migrate` inside one transaction.  Certificates are
-- keyed by their certificate id (lowercase hex SHA-256 of the DER), the
-- same value AWS IoT calls certificateId.

CREATE TABLE orgs (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id          bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE ca_certificates (
    id            text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),
    org_id        bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    subject       text NOT NULL,
    ski           text NOT NULL,
    aki           text,
    serial        text NOT NULL,
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    der           bytea NOT NULL,
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'disabled', 'revoked')),
    jitp_product_id bigint REFERENCES products(id) ON DELETE SET NULL,
    jitp_tags     text[] NOT NULL DEFAULT '{}',
    description   text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ca_certificates_org ON ca_certificates (org_id);
CREATE INDEX ca_certificates_ski ON ca_certificates (ski);

-- Only the SHA-256 of a registration code is kept, so a database dump does
-- not hand out valid codes, and lookups never compare secrets in SQL.
CREATE TABLE registration_codes (
    code_sha256 text PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    used_for    text
);

CREATE TABLE devices (
    id               bigserial PRIMARY KEY,
    identifier       text NOT NULL UNIQUE CHECK (identifier ~ '^[A-Za-z0-9._:-]{1,128}$'),
    org_id           bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    product_id       bigint NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    tags             text[] NOT NULL DEFAULT '{}',
    firmware_uuid    text,
    firmware_version text,
    firmware_platform     text,
    firmware_architecture text,
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    manifest_sequence bigint NOT NULL DEFAULT 0,
    first_seen       timestamptz,
    last_seen        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_org_product ON devices (org_id, product_id);

-- A CA may later be deleted; pins outlive it (NervesHub semantics).
CREATE TABLE device_certificates (
    id           text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),
    device_id    bigint NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    ca_id        text REFERENCES ca_certificates(id) ON DELETE SET NULL,
    serial       text NOT NULL,
    ski          text,
    aki          text,
    spki_sha256  text NOT NULL,
    not_before   timestamptz NOT NULL,
    not_after    timestamptz NOT NULL,
    der          bytea NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    pinned_at    timestamptz NOT NULL DEFAULT now(),
    last_used    timestamptz
);
CREATE INDEX device_certificates_device ON device_certificates (device_id);
CREATE INDEX device_certificates_ca ON device_certificates (ca_id);

CREATE TABLE service_identities (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),
    name        text NOT NULL UNIQUE,
    subject     text NOT NULL,
    der         bytea NOT NULL,
    not_after   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE firmware_keys (
    id          bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        text NOT NULL,
    key_id      text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name),
    UNIQUE (org_id, key_id)
);

CREATE TABLE firmware (
    id              bigserial PRIMARY KEY,
    uuid            text NOT NULL UNIQUE,
    org_id          bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    product_id      bigint NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    version         text NOT NULL,
    platform        text NOT NULL DEFAULT '',
    architecture    text NOT NULL DEFAULT '',
    author          text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    vcs_identifier  text NOT NULL DEFAULT '',
    misc            text NOT NULL DEFAULT '',
    key_id          text NOT NULL,
    size            bigint NOT NULL,
    sha256          text NOT NULL,
    meta_conf       bytea NOT NULL,
    meta_conf_sig   bytea NOT NULL,
    artifact        text NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    uploaded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX firmware_org_product ON firmware (org_id, product_id);

CREATE TABLE deployments (
    id              bigserial PRIMARY KEY,
    org_id          bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    product_id      bigint NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    name            text NOT NULL,
    firmware_id     bigint NOT NULL REFERENCES firmware(id),
    tags            text[] NOT NULL DEFAULT '{}',
    version_req     text NOT NULL DEFAULT '',
    concurrency     integer NOT NULL DEFAULT 10 CHECK (concurrency > 0),
    max_failures    integer NOT NULL DEFAULT 0 CHECK (max_failures >= 0),
    failures        integer NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'created' CHECK (state IN ('created', 'running', 'paused')),
    state_reason    text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE device_updates (
    device_id       bigint NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    deployment_id   bigint NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    state           text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    sequence        bigint,
    reason          text NOT NULL DEFAULT '',
    penalty_until   timestamptz,
    issued_at       timestamptz,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, deployment_id)
);
CREATE INDEX device_updates_deployment_state ON device_updates (deployment_id, state);

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL DEFAULT current_user,
    action      text NOT NULL,
    object      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);

-- Brokers LISTEN on channel 'pinion' and re-read what changed.  The payload
-- is '<table> <op> <key>', small enough for NOTIFY's 8000-byte limit.
CREATE FUNCTION pinion_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    key text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        key := OLD.id::text;
    ELSE
        key := NEW.id::text;
    END IF;
    PERFORM pg_notify('pinion', TG_TABLE_NAME || ' ' || lower(TG_OP) || ' ' || key);
    RETURN NULL;
END;
$$;

CREATE TRIGGER ca_certificates_notify AFTER INSERT OR UPDATE OR DELETE ON ca_certificates
    FOR EACH ROW EXECUTE FUNCTION pinion_notify();
CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OF status, identifier, product_id, tags OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION pinion_notify();
CREATE TRIGGER device_certificates_notify AFTER INSERT OR UPDATE OF status OR DELETE ON device_certificates
    FOR EACH ROW EXECUTE FUNCTION pinion_notify();
CREATE TRIGGER service_identities_notify AFTER INSERT OR UPDATE OR DELETE ON service_identities
    FOR EACH ROW EXECUTE FUNCTION pinion_notify();
CREATE TRIGGER deployments_notify AFTER INSERT OR UPDATE OF state, firmware_id, tags, version_req OR DELETE ON deployments
    FOR EACH ROW EXECUTE FUNCTION pinion_notify();
CREATE TRIGGER firmware_notify AFTER UPDATE OF status OR DELETE ON firmware
    FOR EACH ROW EXECUTE FUNCTION pinion_notify();
