"""Creates a user and a personal API key on a live Arbor; prints the key.

Usage: arbor_setup.py BASE_URL USERNAME
"""

import sys

import httpx

base, username = sys.argv[1], sys.argv[2]
credentials = {"username": username, "password": "interop password 1"}
with httpx.Client(base_url=base, timeout=30) as http:
    http.post("/api/v1/users", json=credentials).raise_for_status()
    login = http.post("/api/v1/auth/login", json=credentials)
    login.raise_for_status()
    access = login.json()["access_token"]
    created = http.post(
        "/api/v1/auth/api-keys",
        json={"name": "interop"},
        headers={"Authorization": f"Bearer {access}"},
    )
    created.raise_for_status()
    print(created.json()["key"])
