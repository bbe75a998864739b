"""The device side: worker daemon, the spawned executor that owns the device, backends."""
