"""The ledger service: the double-entry journal by trace id and the SQL views; never changes a decision."""
