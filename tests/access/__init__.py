"""Who may do what: the access matrices of the pages and the API, tenancy, hostile input, sign-in
and concurrent requests.
"""
