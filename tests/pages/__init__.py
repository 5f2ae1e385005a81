"""Pages that show the network and keep themselves up to date: the Network page and drawing, live
updates, the audit log.
"""
