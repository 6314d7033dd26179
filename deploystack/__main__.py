from deploystack.cli import main

main()
