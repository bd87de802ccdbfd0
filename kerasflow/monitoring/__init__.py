"""Monitoring a served model: drift of new data or logged requests from its training data."""
