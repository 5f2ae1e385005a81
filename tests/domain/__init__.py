"""The domain's rules, through the pages and functions that apply them: services and names, old
hostnames, references, shared secrets and rotation, peering, teams, connection tests.
"""
