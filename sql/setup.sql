--
-- Installation: the objects the contract names
--
CREATE EXTENSION idempotency;

\dx+ idempotency

-- the claim's result row, as a driver sees it
SELECT proname, pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result
  FROM pg_proc p
 WHERE pronamespace = 'public'::regnamespace AND proname LIKE 'idem\_%'
 ORDER BY proname;

SELECT enum_range(NULL::idem_status), enum_range(NULL::idem_outcome);

SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull
  FROM pg_attribute
 WHERE attrelid = 'idem_keys'::regclass AND attnum > 0
 ORDER BY attnum;

SELECT indexrelid::regclass, indisprimary,
       pg_get_indexdef(indexrelid) AS definition
  FROM pg_index WHERE indrelid = 'idem_keys'::regclass ORDER BY 1;

-- the columns of idem_claim()'s row
SELECT attname, format_type(atttypid, atttypmod) AS type
  FROM pg_attribute
 WHERE attrelid = 'idem_claim_result'::regclass AND attnum > 0
 ORDER BY attnum;
