"""The HTTP front end: validates, stores, hands jobs to the queue. Runs no training itself."""
