"""Writing and reading files safely: atomic.py (a file, a unit of files or a folder appears whole or not at all),
destinations.py (where output may go), locking.py (a folder's writers one at a time), staging.py (temp files),
journal.py (a unit's commit and the recovery of a dead writer's unit), untrusted_json.py (JSON nobody vouches for).
"""
