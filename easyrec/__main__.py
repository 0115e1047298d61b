from easyrec.cli import main

main()
