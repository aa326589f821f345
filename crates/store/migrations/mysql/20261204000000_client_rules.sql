-- Client rules by peer-id prefix, changed through the admin API and shared by every node.
-- ASCII with a binary collation: prefixes are case-sensitive, as peer ids are.
CREATE TABLE client_rules (
    prefix VARCHAR(20) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY CHECK (CHAR_LENGTH(prefix) >= 1),
    kind VARCHAR(5) CHARACTER SET ascii COLLATE ascii_bin NOT NULL CHECK (kind IN ('allow', 'deny')),
    added_at BIGINT NOT NULL
) ENGINE = InnoDB;
