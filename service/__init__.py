"""What the API and the workers share: settings, database, blob store and job queue.

Imports neither api/ nor worker/.
"""
