-- Users, roles, refresh tokens and the hash-chained audit trail.

CREATE TABLE roles (
    name text PRIMARY KEY,
    description text NOT NULL
);
INSERT INTO roles (name, description) VALUES
    ('trader', 'places orders and reads market data, own portfolio, alerts and analyses'),
    ('admin', 'operates the platform: kill switch, rejections, user management'),
    ('service', 'a platform component acting on its own behalf');

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    disabled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE user_roles (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role text NOT NULL REFERENCES roles (name),
    PRIMARY KEY (user_id, role)
);

-- Refresh tokens are stored as SHA-256 digests only. A family is one login; rotating a
-- token marks it used, and presenting a used token again revokes the whole family.
CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY,
    family_id uuid NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    issued_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz,
    revoked_reason text
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

-- Audit trail: append-only, each row chained to the previous one by SHA-256.
CREATE TABLE audit_log (
    seq bigint PRIMARY KEY,
    ts timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    service text NOT NULL,
    endpoint text NOT NULL,
    reason text NOT NULL,
    entity_type text NOT NULL,
    entity_id text NOT NULL,
    before jsonb,
    after jsonb,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id);
CREATE INDEX audit_log_ts_idx ON audit_log (ts);

-- The chain head: one row whose lock serialises appends, so the chain has no forks.
CREATE TABLE audit_head (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq bigint NOT NULL,
    hash bytea NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, '\x'::bytea || sha256('starkmatter-audit-genesis'));

-- What a row's hash covers; used by both append and verification, so they cannot disagree.
CREATE FUNCTION audit_row_hash(
    prev_hash bytea, seq bigint, ts timestamptz, actor text, action text, service text,
    endpoint text, reason text, entity_type text, entity_id text, before jsonb, after jsonb
) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev_hash || convert_to(jsonb_build_array(
        seq, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), actor, action,
        service, endpoint, reason, entity_type, entity_id, before, after)::text, 'UTF8'))
$$;

CREATE FUNCTION audit_append(
    p_actor text, p_action text, p_service text, p_endpoint text, p_reason text,
    p_entity_type text, p_entity_id text, p_before jsonb, p_after jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    head audit_head%ROWTYPE;
    now_ts timestamptz := date_trunc('microseconds', clock_timestamp());
    new_hash bytea;
BEGIN
    SELECT * INTO head FROM audit_head WHERE id FOR UPDATE;
    new_hash := audit_row_hash(head.hash, head.seq + 1, now_ts, p_actor, p_action, p_service,
        p_endpoint, p_reason, p_entity_type, p_entity_id, p_before, p_after);
    INSERT INTO audit_log VALUES (head.seq + 1, now_ts, p_actor, p_action, p_service,
        p_endpoint, p_reason, p_entity_type, p_entity_id, p_before, p_after, head.hash, new_hash);
    UPDATE audit_head SET seq = head.seq + 1, hash = new_hash WHERE id;
    RETURN head.seq + 1;
END
$$;

CREATE FUNCTION audit_log_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();
