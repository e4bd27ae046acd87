"""The durable machinery every feature runs on: the inbox in, the outbox and delivery worker out, the send
limiter, the flood guard, the audit log, the clock and the update being handled. It knows no feature."""
