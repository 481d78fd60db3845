-- A leased claim for an effect outside the database, run in autocommit mode.
SELECT * FROM idem_claim(key => 'charge-981', lease => '30 seconds');   -- commits at once, in_progress
-- ... call the provider ...
SELECT idem_complete(key => 'charge-981', response => '{"charge": "ch_1"}', attempt => 1);
