from salvusctl.cli import main

main()
