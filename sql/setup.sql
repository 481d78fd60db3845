--
-- Installation: the objects the contract names
--
CREATE EXTENSION idempotency;

-- the extension's members (what \dx+ shows, less the array and row types
-- that 17 and later also list as members)
SELECT pg_describe_object(classid, objid, objsubid) AS member
  FROM pg_depend d
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'idempotency')
   AND NOT EXISTS (SELECT FROM pg_type t
					WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid
					  AND (t.typelem <> 0 AND t.typcategory = 'A'
						   OR t.typrelid <> 0 AND t.typtype = 'c'
						      AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) <> 'c'))
 ORDER BY 1;

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
