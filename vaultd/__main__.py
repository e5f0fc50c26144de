from vaultd.cli.main import main

main()
