-- The reference schema: programs, talks, the users who clip programs, and their devices.
CREATE TABLE users (
    id     BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name   VARCHAR(255) NOT NULL,
    locale VARCHAR(35) NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE programs (
    id      BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    title   VARCHAR(512) NOT NULL,
    CONSTRAINT programs_user_id FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE talks (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    program_id BIGINT NOT NULL,
    user_id    BIGINT NOT NULL,
    title      VARCHAR(512) NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT talks_program_id FOREIGN KEY (program_id) REFERENCES programs (id),
    CONSTRAINT talks_user_id FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- A clip is a user's subscription to a program.
CREATE TABLE clips (
    user_id    BIGINT NOT NULL,
    program_id BIGINT NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (user_id, program_id),
    KEY clips_program_id (program_id, user_id),
    CONSTRAINT clips_user_id FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT clips_program_fk FOREIGN KEY (program_id) REFERENCES programs (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE devices (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    provider        VARCHAR(8) NOT NULL,
    platform        VARCHAR(16) NOT NULL,
    -- Tokens are ASCII; a byte-wise collation keeps the unique index exact and small.
    token           VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    disabled_at     DATETIME(6) NULL,
    disabled_reason VARCHAR(255) NULL,
    UNIQUE KEY devices_token (token),
    KEY devices_user_id (user_id),
    CONSTRAINT devices_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT devices_provider CHECK (provider IN ('fcm', 'apns')),
    CONSTRAINT devices_platform CHECK (platform IN ('android', 'ios', 'web'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
