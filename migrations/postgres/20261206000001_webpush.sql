-- Web Push (a third provider): a device whose provider is 'webpush' (platform 'web', allowed
-- already) holds in its token the subscription JSON the browser gave, about 200 to 700
-- characters; TEXT holds it, and its unique index takes entries up to about 2,700 bytes.
ALTER TABLE devices DROP CONSTRAINT devices_provider_check;
ALTER TABLE devices ADD CONSTRAINT devices_provider_check
    CHECK (provider IN ('fcm', 'apns', 'webpush'));
