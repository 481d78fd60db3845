--
-- idem_fingerprint(): equal for equal jsonb values, and stable
--
-- pinned: a change of the canonical form would make stored fingerprints mismatch
SELECT idem_fingerprint('{}');
SELECT idem_fingerprint('{"amount": 100, "currency": "EUR"}');
SELECT length(idem_fingerprint('[1, 2, 3]'));

-- equal jsonb values hash equal: key order, white space, duplicate keys, number forms
SELECT idem_fingerprint('{"a": 1, "b": [true, null]}') = idem_fingerprint('{ "b":[true,null],"a":1 }') AS key_order;
SELECT idem_fingerprint('{"a": 1, "a": 2}') = idem_fingerprint('{"a": 2}') AS duplicate_keys;
SELECT idem_fingerprint('1.0') = idem_fingerprint('1') AS numeric_scale,
       '1.0'::jsonb = '1'::jsonb AS jsonb_equal;
SELECT idem_fingerprint('{"n": 1e2}') = idem_fingerprint('{"n": 100}') AS exponent;
SELECT idem_fingerprint('"\u00e9"') = idem_fingerprint('"é"') AS unicode_escape;

-- different values hash differently
SELECT count(DISTINCT idem_fingerprint(v)) AS distinct_hashes, count(*) AS values
  FROM unnest(ARRAY['1', '"1"', '[1]', '[[1]]', '{"1": 1}', 'null', '[null]', '{}', '[]',
                    '""', 'true', 'false', '"true"', '{"a": "bc"}', '{"ab": "c"}',
                    '["a", "bc"]', '["ab", "c"]', '{"a": {}}', '{"a": []}', '-1', '0.1']::jsonb[]) AS v;

-- NULL in, NULL out
SELECT idem_fingerprint(NULL) IS NULL AS null_in_null_out;

-- used with a claim
TRUNCATE idem_keys;
SELECT outcome FROM idem_claim('f-1', fingerprint => idem_fingerprint('{"amount": 100}'));
SELECT outcome FROM idem_claim('f-1', fingerprint => idem_fingerprint('{ "amount": 100.00 }'));
SELECT outcome FROM idem_claim('f-1', fingerprint => idem_fingerprint('{"amount": 101}'));
