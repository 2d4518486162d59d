"""Alerts: notification channels (signed webhooks) and rules on entitlement thresholds and
invoice events; events stored once, deliveries retried with backoff."""
