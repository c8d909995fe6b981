from ttcli.main import main

main()
