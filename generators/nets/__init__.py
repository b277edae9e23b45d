"""Network definitions of the generator zoo, one module per family.

Importing a module registers its family with ``generators.registry``; use
``generators.registry.create_generator`` rather than these classes directly.
"""
