-- SPDX-License-Identifier: Apache-2.0
-- A service identity can be revoked (`pinion service revoke`, for a leaked
-- certificate).  The row stays: its name keeps the client ids NAME and
-- NAME-* reserved, brokers refuse the certificate naming the reason, and
-- the existing trigger announces the UPDATE so every broker kicks it.
-- `pinion service remove` deletes the row instead.
ALTER TABLE service_identities
    ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Revocation is final, whoever writes the row: a revoked certificate never
-- becomes a service again (remove it and add a new certificate instead).
CREATE FUNCTION pinion_service_revocation_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'revoked' AND NEW.status <> 'revoked' THEN
        RAISE EXCEPTION 'service identity % is revoked; revocation is final', OLD.name
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER service_identities_revocation_final BEFORE UPDATE OF status ON service_identities
    FOR EACH ROW EXECUTE FUNCTION pinion_service_revocation_final();
