from bracli.cli import main

main()
