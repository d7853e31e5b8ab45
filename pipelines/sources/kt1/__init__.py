"""Key Telematics HTTP Export Task: the `raw/kt1/*` drain of the `/v2/stream` queue."""
