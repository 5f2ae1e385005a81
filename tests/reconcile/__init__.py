"""From rows to the desired state and onto the manifests backend: passes, drift, orphaned
namespaces, CoreDNS, reachability.
"""
