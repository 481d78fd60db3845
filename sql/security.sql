--
-- Security: no PUBLIC access to the table, no redirection through search_path,
-- operator functions kept from PUBLIC, row-level security never bypassed
--
\set SHOW_CONTEXT never
TRUNCATE idem_keys;

-- an application role with no grants: it can use the functions, not the table
CREATE ROLE idem_app;
SELECT has_table_privilege('idem_app', 'idem_keys', 'SELECT') AS can_select,
       has_table_privilege('idem_app', 'idem_keys', 'INSERT, UPDATE, DELETE, TRUNCATE') AS can_write;
SELECT p.oid::regprocedure AS function, has_function_privilege('idem_app', p.oid, 'EXECUTE') AS can_execute
  FROM pg_proc p
 WHERE pronamespace = 'public'::regnamespace AND proname LIKE 'idem\_%'
 ORDER BY proname;
SET ROLE idem_app;
SELECT outcome FROM idem_claim('sec-1');
SELECT outcome FROM idem_claim('sec-1');
SELECT key, status FROM idem_lookup('sec-1');
SELECT * FROM idem_keys;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO idem_keys (scope, key, status, attempt, created_at, expires_at)
VALUES ('', 'forged', 'completed', 1, now(), now() + interval '1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_forget('sec-1');
\echo :LAST_ERROR_SQLSTATE
SELECT idem_sweep();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- a hostile search_path cannot redirect the functions to other objects
CREATE SCHEMA hostile;
CREATE TABLE hostile.idem_keys (scope text, key text);
CREATE TYPE hostile.idem_outcome AS ENUM ('claimed', 'replay', 'in_progress', 'mismatch');
CREATE TYPE hostile.idem_status AS ENUM ('in_progress', 'completed');
SET search_path = hostile, public;
SELECT outcome FROM public.idem_claim('sec-2');
SELECT count(*) FROM hostile.idem_keys;
RESET search_path;
SELECT key FROM idem_keys WHERE key = 'sec-2';
DROP SCHEMA hostile CASCADE;

-- row-level security on idem_keys: the functions refuse rather than bypass it
ALTER TABLE idem_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON idem_keys TO idem_app
  USING (scope = current_user) WITH CHECK (scope = current_user);
GRANT SELECT ON idem_keys TO idem_app;
SET ROLE idem_app;
SELECT outcome FROM idem_claim('sec-3', scope => 'someone_else');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM idem_keys;
RESET ROLE;
-- the pattern the README shows: a SECURITY DEFINER function binds the scope
-- to the tenant's login role; policies keep direct reads to the tenant's rows
CREATE FUNCTION tenant_claim(key text)
RETURNS TABLE (outcome idem_outcome, response jsonb, attempt integer)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.outcome, c.response, c.attempt
        FROM public.idem_claim(key => key, scope => session_user::text) AS c $$;
REVOKE EXECUTE ON FUNCTION tenant_claim(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_claim(text) TO idem_app;
SELECT outcome FROM idem_claim('sec-4', scope => 'other_tenant');
SET SESSION AUTHORIZATION idem_app;
SELECT outcome FROM tenant_claim('sec-4');
SELECT outcome FROM tenant_claim('sec-4');
SELECT scope, key FROM idem_keys ORDER BY key;
RESET SESSION AUTHORIZATION;
SELECT scope, key FROM idem_keys WHERE key = 'sec-4' ORDER BY scope;

DROP FUNCTION tenant_claim(text);
DROP POLICY tenant_scope ON idem_keys;
ALTER TABLE idem_keys DISABLE ROW LEVEL SECURITY;
REVOKE SELECT ON idem_keys FROM idem_app;
DROP ROLE idem_app;
