from emzoo.cli import main

main(prog_name="emzoo")
