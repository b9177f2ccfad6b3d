-- What each metering server last reported of each product (the share it applies, the
-- licenses in use, the clients waiting) and the share last assigned to it. A share
-- is only ever raised from licenses no other server holds or may still hold, so the
-- site never grants more than the count, even while a server is unreachable.
CREATE TABLE allotments (
    system     TEXT NOT NULL,
    product    TEXT NOT NULL,
    applied    BIGINT NOT NULL DEFAULT 0,
    in_use     BIGINT NOT NULL DEFAULT 0,
    waiting    BIGINT NOT NULL DEFAULT 0,
    assigned   BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (system, product)
);
