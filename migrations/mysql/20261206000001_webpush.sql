-- Web Push (a third provider): a device whose provider is 'webpush' (platform 'web', allowed
-- already) holds in its token the subscription JSON the browser gave, about 200 to 700
-- characters, longer than the push tokens 1024 was sized for once an endpoint carries a long
-- token of its own. 2048 ASCII bytes keep the unique index within InnoDB's 3072-byte key limit.
ALTER TABLE devices DROP CONSTRAINT devices_provider;
ALTER TABLE devices ADD CONSTRAINT devices_provider CHECK (provider IN ('fcm', 'apns', 'webpush'));
ALTER TABLE devices MODIFY token VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
