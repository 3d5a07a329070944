void main() { print("hello"); }
