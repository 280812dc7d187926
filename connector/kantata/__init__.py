"""The Kantata OX side: the client that reads invoices page by page and writes the
reference back."""
