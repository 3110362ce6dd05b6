"""Create one RabbitMQ user per service with its least permissions (operations/broker_access.py).

    # a local broker, through its management API (as its administrator):
    python scripts/broker_users.py apply --vhost / --password-file var/broker-passwords.json
    # the compose file's definitions, from the passwords in .env (after editing them):
    python scripts/broker_users.py definitions --env-file .env > docker/rabbitmq/definitions.json

``apply`` makes a random password for each user it has none for and keeps them in the password
file (JSON, service -> password; mode 600), which is what each service's RABBITMQ_USER /
RABBITMQ_PASS are set from; it then prints those and the EVENT_* settings to turn the trust
check on (docs/operations.md, "Broker users and trusted events").
"""
import argparse
import json
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from operations.broker_access import (  # noqa: E402
    SERVICES, ManagementApi, default_users, definitions, publishers)



def read_env_file(path):
    """KEY=value lines of a compose .env file."""
    values = {}
    with open(path) as file:
        for line in file:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def load_passwords(path):
    if path and os.path.exists(path):
        with open(path) as file:
            return json.load(file)
    return {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["apply", "definitions"])
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--prefix", default="knowledge_nest_", help="user name prefix")
    parser.add_argument("--management-url", default="http://127.0.0.1:15672")
    parser.add_argument("--admin", default="guest:guest", help="user:password of an admin")
    parser.add_argument("--password-file", default="var/broker-passwords.json")
    parser.add_argument("--env-file", default=".env", help="for definitions: the compose .env")
    args = parser.parse_args(argv)
    users = default_users(args.prefix)

    if args.command == "definitions":
        env = read_env_file(args.env_file)
        passwords = {service: env[f"{service.upper()}_RABBITMQ_PASS"] for service in SERVICES}
        operator = (env["RABBITMQ_USER"], env["RABBITMQ_PASS"])
        json.dump(definitions(users, passwords, args.vhost, operator=operator, hashed=True),
                  sys.stdout, indent=2)
        print()
        return 0

    passwords = load_passwords(args.password_file)
    for service in SERVICES:
        passwords.setdefault(service, secrets.token_urlsafe(24))
    os.makedirs(os.path.dirname(os.path.abspath(args.password_file)), exist_ok=True)
    with open(os.open(args.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
              "w") as file:
        json.dump(passwords, file, indent=2)
    admin_user, _, admin_password = args.admin.partition(":")
    ManagementApi(args.management_url, admin_user, admin_password).apply(
        definitions(users, passwords, args.vhost))
    for service in SERVICES:
        print(f"{service}: RABBITMQ_USER={users[service]} RABBITMQ_PASS=<{args.password_file}>")
    print("EVENT_TRUST=true EVENT_PUBLISHERS='" + json.dumps(publishers(users)) + "'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
