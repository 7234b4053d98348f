"""One module per `tailor` subcommand: NAME, HELP, add_arguments(parser), main(args) -> int.

cli.py discovers them, so adding a command never touches another command's file.
"""
