"""Entry point Pulumi runs for every stack of the acm-platform project."""

from stacks.program import main

main()
