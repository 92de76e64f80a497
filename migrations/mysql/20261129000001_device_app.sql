-- Several apps in one deployment: the app a device belongs to, as the notifier's [apps.NAME]
-- sections name it. NULL (every device so far) is the default app: the top-level [fcm] and
-- [apns]. The default audience query reads it.
ALTER TABLE devices ADD COLUMN app VARCHAR(64) NULL;
