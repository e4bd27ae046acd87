"""Database engine, schema migrations and one repository per aggregate."""
