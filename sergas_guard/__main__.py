from sergas_guard.cli import main

main()
