"""The pure model of stock, items and warehouses: no I/O, no framework."""
