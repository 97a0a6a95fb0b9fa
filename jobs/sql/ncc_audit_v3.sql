-- The audit trail, version 3: added to versions 1 and 2, which stay as they are.
--
-- * An incident the regulator accepted (2xx) without an incident id is recorded all the same:
--   it holds the incident, and the job never sends it again (docs/ncc-compliance.md, "What a
--   2xx without a usable body means"). Its `incident_id` is then NULL.

ALTER TABLE ncc_audit.incidents ALTER COLUMN incident_id DROP NOT NULL;
