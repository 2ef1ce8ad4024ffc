from utrace.cli.main import main

main()
