"""The worker's policies, one module each, so each can be read and tested alone (dramatiq's
middleware is the model). workers/daemon.py's `run_chunk` is the loop that calls their hooks:

  on chunk start     expiry      a run past its `--expires` books the chunk EXPIRED, runs nothing
  after a claim      lost        an attempt whose worker died in it is booked INFRA; the second time, final
                     cancel      a claim that found the run canceled stops the chunk
  before a vector    shutdown    a warm shutdown feeds the executor nothing more
                     lease       a lease confirmed over half its TTL ago (stopped, paused) is renewed
                                 first; a lost one is claimed again (skipped when taken over)
  heartbeat          cancel      the vector of a canceled run is killed while it runs
                     lease       each renew confirms the leases it found held
  after an outcome   cancel      a killed vector of a canceled run is booked CANCELED
                     crash       a crash gets one more try (elsewhere when it can), a second one is final
                     quarantine  after a hang or crash: reset, health check, or quarantine (BAD)
  on chunk end       shutdown    a warm shutdown hands the unstarted rest back to the queue
"""
